"""The long-running node: the daemon, its HTTP control API over a Unix socket, the client the CLI uses,
config and logs."""
