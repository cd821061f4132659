//! The `switchyard` binary.

fn main() -> std::process::ExitCode {
    switchyard_gateway::cli::main()
}
