//! The `tollgate` binary: the reference gateway. See [`tollgate::gateway`].

fn main() -> std::process::ExitCode {
    tollgate::gateway::cli::main()
}
