use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cellarrow::cli::Cli::parse();
    match cellarrow::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellarrow: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
