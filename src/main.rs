//! The `amqpprox` binary: parses the command line, starts logging and hands
//! over to the supervisor. Prints the original's start and stop lines.

use amqpprox::{cli, logging, supervisor};

fn main() {
    // Pump buffers (256 KiB) must come from mmap, never from the heap:
    // fresh mmap'd pages are zero and cost no RSS until a read touches them,
    // where a heap chunk would be memset whole. glibc would otherwise raise
    // its threshold after the first large free.
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
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
