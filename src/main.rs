use clap::Parser;

fn main() -> std::process::ExitCode {
    // Like other Unix filters, end quietly when the reader of our output goes away
    // (`cellarrow inspect corpus | head`) instead of failing on a broken pipe.
    // SAFETY: called before any thread starts; restores the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cellarrow::cli::Cli::parse();
    match cellarrow::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellarrow: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
