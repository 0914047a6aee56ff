//! The `ledger` command. Parsing and the exit code live here; every command is a library
//! function in `ledger_client::cli`.

fn main() -> std::process::ExitCode {
    ledger_client::cli::main()
}
