//! The `yaraflow` command-line program. See `yaraflow --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
