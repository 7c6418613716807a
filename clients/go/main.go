// Command cps-go-client is the Go interop client of cps.v1: one session
// through the stubs generated from protos/ alone (protoc-gen-go and
// protoc-gen-go-grpc), every result checked.
//
//	cps-go-client HOST:PORT
//
// Plaintext by default. TLS is set by environment variables, the same in the
// C++ and Node clients: CPS_CA_CERT (PEM CA that signed the server's
// certificate: TLS on, the server is verified), CPS_CLIENT_CERT and
// CPS_CLIENT_KEY (a client certificate to present, for a server started with
// --client-ca), CPS_SERVER_NAME (the name to verify instead of HOST).
//
// Prints one "OK" line and exits 0, or prints what did not match and exits 1
// (a refused connection included); exits 2 on bad usage or TLS settings.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	cpsv1 "cps/v1"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

const deadline = 10 * time.Second

func sectionID(id string) *cpsv1.SectionId { return &cpsv1.SectionId{Id: []byte(id)} }

// usageError is a setting the client cannot use (exit 2, nothing is sent).
type usageError struct{ message string }

func (e usageError) Error() string { return e.message }

// transport is plaintext, or TLS when CPS_CA_CERT is set (see the top of the file).
func transport() (grpc.DialOption, error) {
	ca, cert, key := os.Getenv("CPS_CA_CERT"), os.Getenv("CPS_CLIENT_CERT"), os.Getenv("CPS_CLIENT_KEY")
	serverName := os.Getenv("CPS_SERVER_NAME")
	if ca == "" {
		if cert != "" || key != "" || serverName != "" {
			return nil, usageError{"CPS_CLIENT_CERT, CPS_CLIENT_KEY and CPS_SERVER_NAME need CPS_CA_CERT (TLS)"}
		}
		return grpc.WithInsecure(), nil
	}
	if (cert == "") != (key == "") {
		return nil, usageError{"CPS_CLIENT_CERT and CPS_CLIENT_KEY go together"}
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, usageError{fmt.Sprintf("CPS_CA_CERT: %v", err)}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, usageError{fmt.Sprintf("CPS_CA_CERT=%s: no PEM certificate in it", ca)}
	}
	// An empty ServerName means the host of the target.
	config := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, usageError{fmt.Sprintf("CPS_CLIENT_CERT=%s, CPS_CLIENT_KEY=%s: %v", cert, key, err)}
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(config)), nil
}

func run(target string) error {
	security, err := transport()
	if err != nil {
		return err
	}
	conn, err := grpc.Dial(target, security)
	if err != nil {
		return fmt.Errorf("Dial: %w", err)
	}
	defer conn.Close()
	client := cpsv1.NewCheckpointServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*deadline)
	defer cancel()

	session, err := client.Initialize(ctx, &cpsv1.InitializeRequest{
		Version: &cpsv1.Version{ReleaseCode: "B", MajorVersion: 1},
	})
	if err != nil {
		return fmt.Errorf("Initialize: %w", err)
	}
	if v := session.Version; v.GetReleaseCode() != "B" || v.GetMajorVersion() != 1 {
		return fmt.Errorf("Initialize answered version %v", v)
	}
	service := session.ServiceHandle

	// The session's callback stream, open for the whole session: Finalize ends it.
	callbacks, err := client.Callbacks(ctx, &cpsv1.CallbacksRequest{ServiceHandle: service})
	if err != nil {
		return fmt.Errorf("Callbacks: %w", err)
	}

	const name = "go-interop"
	opened, err := client.CheckpointOpen(ctx, &cpsv1.CheckpointOpenRequest{
		ServiceHandle:  service,
		CheckpointName: name,
		CheckpointOpenFlags: []cpsv1.OpenFlag{
			cpsv1.OpenFlag_OPEN_FLAG_CREATE, cpsv1.OpenFlag_OPEN_FLAG_READ, cpsv1.OpenFlag_OPEN_FLAG_WRITE,
		},
		CheckpointCreationAttributes: &cpsv1.CheckpointCreationAttributes{
			CreationFlags:     []cpsv1.CreationFlag{cpsv1.CreationFlag_CREATION_FLAG_WR_ACTIVE_REPLICA},
			CheckpointSize:    4096,
			MaxSections:       4,
			MaxSectionSize:    1024,
			MaxSectionIdSize:  16,
			RetentionDuration: &cpsv1.RetentionDuration{Kind: &cpsv1.RetentionDuration_Forever{Forever: true}},
		},
	})
	if err != nil {
		return fmt.Errorf("CheckpointOpen: %w", err)
	}
	handle := opened.CheckpointHandle

	ids := []string{"alpha", "beta"}
	for _, id := range ids {
		created, err := client.SectionCreate(ctx, &cpsv1.SectionCreateRequest{
			CheckpointHandle:          handle,
			SectionCreationAttributes: &cpsv1.SectionCreationAttributes{SectionId: sectionID(id)},
		})
		if err != nil {
			return fmt.Errorf("SectionCreate: %w", err)
		}
		if got := string(created.SectionId.GetId()); got != id {
			return fmt.Errorf("SectionCreate returned id %q", got)
		}
	}

	// One write, an iovector of two elements; then read both back in one call.
	data := [][]byte{[]byte("hello from Go"), {0, 0xff, 1, 0xfe}}
	write := &cpsv1.CheckpointWriteRequest{CheckpointHandle: handle}
	read := &cpsv1.CheckpointReadRequest{CheckpointHandle: handle}
	for i, id := range ids {
		write.IoVector = append(write.IoVector, &cpsv1.IOVectorElement{SectionId: sectionID(id), DataBuffer: data[i]})
		read.IoVector = append(read.IoVector, &cpsv1.IOVectorElement{SectionId: sectionID(id)})
	}
	_, err = client.CheckpointWrite(ctx, write)
	if err != nil {
		return fmt.Errorf("CheckpointWrite: %w", err)
	}
	got, err := client.CheckpointRead(ctx, read)
	if err != nil {
		return fmt.Errorf("CheckpointRead: %w", err)
	}
	if len(got.IoVector) != 2 {
		return fmt.Errorf("CheckpointRead returned %d elements", len(got.IoVector))
	}
	for i, element := range got.IoVector {
		if !bytes.Equal(element.DataBuffer, data[i]) || element.ReadSize != uint64(len(data[i])) {
			return fmt.Errorf("section %s reads back %q (read_size %d)", ids[i], element.DataBuffer, element.ReadSize)
		}
	}

	// The error case: reading a missing section (second element) is NOT_FOUND
	// with the seed's reason and the index of the element.
	_, err = client.CheckpointRead(ctx, &cpsv1.CheckpointReadRequest{
		CheckpointHandle: handle,
		IoVector:         []*cpsv1.IOVectorElement{{SectionId: sectionID("alpha")}, {SectionId: sectionID("missing")}},
	})
	if err := checkNotExist(err); err != nil {
		return err
	}

	// Immediate consumption: an overwrite of "beta" arrives on the stream.
	_, err = client.ImmediateConsumptionRegister(ctx,
		&cpsv1.ImmediateConsumptionRegisterRequest{CheckpointHandle: handle})
	if err != nil {
		return fmt.Errorf("ImmediateConsumptionRegister: %w", err)
	}
	_, err = client.SectionOverwrite(ctx, &cpsv1.SectionOverwriteRequest{
		CheckpointHandle: handle, SectionId: sectionID("beta"), DataBuffer: []byte("overwritten"),
	})
	if err != nil {
		return fmt.Errorf("SectionOverwrite: %w", err)
	}
	batch, err := callbacks.Recv()
	if err != nil {
		return fmt.Errorf("Callbacks (waiting for the notification): %w", err)
	}
	if len(batch.Callbacks) == 0 {
		return errors.New("Callbacks sent an empty batch")
	}
	for _, callback := range batch.Callbacks {
		notification := callback.GetNotification()
		if notification == nil {
			return fmt.Errorf("unexpected callback %v", callback)
		}
		changed := notification.ChangedSections
		if notification.CheckpointName != name || notification.CheckpointHandle != handle ||
			len(changed) != 1 || string(changed[0].SectionId.GetId()) != "beta" ||
			changed[0].Change != cpsv1.SectionChange_SECTION_CHANGE_OVERWRITTEN {
			return fmt.Errorf("notification %v", notification)
		}
	}

	// Iterate every section: the ids come back in creation order.
	iteration, err := client.SectionIterationInitialize(ctx, &cpsv1.SectionIterationInitializeRequest{
		CheckpointHandle: handle, SectionsChosen: cpsv1.SectionsChosen_SECTIONS_CHOSEN_ANY,
	})
	if err != nil {
		return fmt.Errorf("SectionIterationInitialize: %w", err)
	}
	var seen []string
	for {
		step, err := client.SectionIterationNext(ctx, &cpsv1.SectionIterationNextRequest{
			SectionIterationHandle: iteration.SectionIterationHandle,
		})
		if err != nil {
			return fmt.Errorf("SectionIterationNext: %w", err)
		}
		if step.NoMoreSections {
			break
		}
		if len(seen) == 16 {
			return errors.New("SectionIterationNext never says no_more_sections")
		}
		seen = append(seen, string(step.SectionDescriptor.GetSectionId().GetId()))
	}
	if fmt.Sprint(seen) != fmt.Sprint(ids) {
		return fmt.Errorf("iteration returned %v, wanted %v", seen, ids)
	}
	_, err = client.SectionIterationFinalize(ctx, &cpsv1.SectionIterationFinalizeRequest{
		SectionIterationHandle: iteration.SectionIterationHandle,
	})
	if err != nil {
		return fmt.Errorf("SectionIterationFinalize: %w", err)
	}

	// Close, delete, finalize; Finalize ends the callback stream cleanly.
	_, err = client.CheckpointClose(ctx, &cpsv1.CheckpointCloseRequest{CheckpointHandle: handle})
	if err != nil {
		return fmt.Errorf("CheckpointClose: %w", err)
	}
	_, err = client.CheckpointDelete(ctx, &cpsv1.CheckpointDeleteRequest{ServiceHandle: service, CheckpointName: name})
	if err != nil {
		return fmt.Errorf("CheckpointDelete: %w", err)
	}
	_, err = client.Finalize(ctx, &cpsv1.FinalizeRequest{ServiceHandle: service})
	if err != nil {
		return fmt.Errorf("Finalize: %w", err)
	}
	for err == nil {
		_, err = callbacks.Recv()
	}
	if err != io.EOF {
		return fmt.Errorf("the Callbacks stream did not end cleanly after Finalize: %w", err)
	}
	return nil
}

// checkNotExist checks the status and details of the failed read: code
// NOT_FOUND, an ErrorInfo with the seed's reason and the IOVectorError index.
func checkNotExist(err error) error {
	if err == nil {
		return errors.New("reading a missing section succeeded")
	}
	st := status.Convert(err)
	if st.Code() != codes.NotFound {
		return fmt.Errorf("reading a missing section: %w", err)
	}
	var info *errdetails.ErrorInfo
	var index *cpsv1.IOVectorError
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *cpsv1.IOVectorError:
			index = d
		}
	}
	if info.GetDomain() != "cps.v1" || info.GetReason() != "CL_CKPT_ERR_NOT_EXIST" {
		return fmt.Errorf("ErrorInfo %v in details %v", info, st.Details())
	}
	if index == nil || index.ErroneousVectorIndex != 1 {
		return fmt.Errorf("IOVectorError %v in details %v", index, st.Details())
	}
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cps-go-client HOST:PORT")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		var usage usageError
		if errors.As(err, &usage) {
			fmt.Fprintf(os.Stderr, "cps-go-client: %v\n", usage)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "cps-go-client: FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("cps-go-client: OK (session, open, sections, iovector write/read, " +
		"NOT_FOUND details, notification, iteration, close, delete, finalize)")
}
