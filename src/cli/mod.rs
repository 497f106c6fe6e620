//! The `flashattn-ort` command line: one file per subcommand.

pub mod bench;
pub mod demo;
pub mod info;
pub mod rewrite;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "flashattn-ort", version, about = "FlashAttention for ONNX Runtime: rewrite models, verify, benchmark")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the op in an ONNX Runtime session on a bundled example and check it against a float64 reference.
    Demo(demo::DemoArgs),
    /// Fuse the attention of an exported ONNX model into ai.flashattn::FlashAttention.
    Rewrite(rewrite::RewriteArgs),
    /// Run an original and a rewritten model on the same generated inputs and compare outputs.
    Verify(verify::VerifyArgs),
    /// CPU benchmark: ai.flashattn::FlashAttention vs ORT's com.microsoft::MultiHeadAttention.
    Bench(bench::BenchArgs),
    /// What this build contains and what the machine offers.
    Info,
}

pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Rewrite(a) => rewrite::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info => info::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
