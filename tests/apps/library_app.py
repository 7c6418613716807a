"""A small application that checkpoints its state with the library API, as
the seed's examples would: `python -m tests.apps.library_app ADDRESS write N`
writes N versions of its state and prints each acknowledged one;
`... read` prints the state it finds after a restart."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from cps.client import Library

CHECKPOINT, DATASET = "inventory-app", 1


class App:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.events: dict[bytes, str] = {}

    # ClCkptSerializeT / ClCkptDeserializeT, in Python
    def serialize(self, dataset_id: int, cookie: Any) -> bytes:
        assert cookie == "cookie-w"
        return json.dumps(self.state).encode()

    def deserialize(self, dataset_id: int, data: bytes, cookie: Any) -> None:
        assert cookie == "cookie-r"
        self.state = json.loads(data)

    def serialize_event(self, dataset_id: int, element_id: bytes, cookie: Any) -> bytes:
        return self.events[element_id].encode()

    def deserialize_event(
        self, dataset_id: int, element_id: bytes, data: bytes, cookie: Any
    ) -> None:
        self.events[element_id] = data.decode()

    def register(self, library: Library) -> None:
        """Same calls on the first start and after a restart."""
        library.checkpoint_create(CHECKPOINT)
        library.dataset_create(
            CHECKPOINT, DATASET, self.serialize, self.deserialize, group_id=3, order=1
        )
        library.element_create(CHECKPOINT, DATASET, self.serialize_event, self.deserialize_event)


def main() -> None:
    address, mode = sys.argv[1], sys.argv[2]
    app = App()
    with Library.connect(address) as library:
        app.register(library)
        if mode == "write":
            for version in range(int(sys.argv[3])):
                app.state = {"version": version, "items": list(range(version % 7))}
                library.dataset_write(CHECKPOINT, DATASET, cookie="cookie-w")
                event = f"event-{version:04d}".encode()
                app.events[event] = f"happened at version {version}"
                library.element_write(CHECKPOINT, DATASET, event)
                print(f"acknowledged {version}", flush=True)
            time.sleep(60)  # killed here
        else:
            library.dataset_read(CHECKPOINT, DATASET, cookie="cookie-r")
            print(json.dumps({"state": app.state, "events": len(app.events)}), flush=True)


if __name__ == "__main__":
    main()
