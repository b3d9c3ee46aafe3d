//! The `amqpprox` binary: parses the command line, starts logging and hands
//! over to the supervisor. Prints the original's start and stop lines.

use amqpprox::{cli, logging, supervisor};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let options = match cli::parse(std::env::args_os()) {
        Ok(o) => o,
        Err(exit) => {
            if exit.to_stdout {
                println!("{}", exit.message);
            } else {
                eprintln!("{}", exit.message);
            }
            std::process::exit(exit.code);
        }
    };
    let log = logging::init(options.console_verbosity, options.log_directory.clone());
    println!(
        "Starting amqpprox, logging to: '{}' control using: '{}'",
        options.log_directory.display(),
        options.control_socket.display()
    );
    let code = match supervisor::run(options.clone()) {
        Ok(code) => code,
        Err(e) => {
            // One line, on the console whatever the verbosity (FATAL), and
            // in the log file.
            amqpprox::fatal!("{e}");
            log.flush();
            std::process::exit(1);
        }
    };
    log.flush();
    println!(
        "Stopping amqpprox, instance: '{}'",
        options.control_socket.display()
    );
    std::process::exit(code);
}
