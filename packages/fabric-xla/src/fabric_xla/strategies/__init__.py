"""XLA strategies: one device, a process per device, XLA's FSDP, and SPMD over a device mesh."""
