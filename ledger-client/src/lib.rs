//! Client side of the custody ledger: the `ledger` CLI (and, with the node, the typed gRPC
//! client). Offline bundle verification depends on ledger-core only: no node, no network.

pub mod cli;
