"""The `cluster` leg: real SLURM daemons, Open MPI's mpirun and two loopback "nodes" on this machine."""
