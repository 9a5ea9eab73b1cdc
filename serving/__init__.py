"""Ray Serve deployments, gRPC servicers, app wiring, explanations and the CLI."""
