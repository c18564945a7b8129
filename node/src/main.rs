//! The `slidemesh` binary: errors are printed as one chain of causes, lowercase, and exit 1.

fn main() {
    if let Err(error) = slidemesh_node::cli::run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
