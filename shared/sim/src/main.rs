//! The deterministic simulation of the job protocol (see `scripts/sim`).

fn main() {}
