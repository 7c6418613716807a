"""cpsctl: the debug CLI of CPS (the seed's chapter 7), over the admin, health
and checkpoint services. ``cpsctl --help``; docs/operations.md."""
