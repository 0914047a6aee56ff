//! Client side of the custody ledger: the typed gRPC client ([`client`]) and the `ledger`
//! CLI ([`cli`]). Offline bundle verification depends on ledger-core only: no node, no
//! network.

pub mod cli;
pub mod client;
