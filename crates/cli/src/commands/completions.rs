//! `agentpkg completions SHELL`: the shell's completion script on standard output.

use clap::CommandFactory;

use crate::args::Cli;
use crate::exit::Failure;

#[derive(clap::Args)]
pub struct Args {
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> Result<(), Failure> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "agentpkg",
        &mut std::io::stdout(),
    );
    Ok(())
}
