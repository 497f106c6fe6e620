use clap::Parser;

fn main() -> std::process::ExitCode {
    flashattn_ort::cli::main(flashattn_ort::cli::Cli::parse())
}
