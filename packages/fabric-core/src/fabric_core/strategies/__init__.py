"""Core's strategies: single device, DDP and FSDP on torch.distributed."""
