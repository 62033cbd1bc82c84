//! `kubectl-kwire`: the same program as `kwire`, under the name kubectl looks for, so that
//! `kubectl kwire status` works once it is on the PATH.

fn main() -> std::process::ExitCode {
    kwire_cli::main()
}
