use std::process::ExitCode;

fn main() -> ExitCode {
    match lb_userspace::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drlb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
