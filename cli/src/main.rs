//! `kwire`: see the library's documentation (`kwire --help`).

fn main() -> std::process::ExitCode {
    kwire_cli::main()
}
