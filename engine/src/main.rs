//! The `firedrill` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    firedrill::cli::main()
}
