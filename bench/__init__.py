"""Fan-out benchmark: a load generator of simulated viewers and a runner that measures a server under it."""
