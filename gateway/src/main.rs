//! The `tollgate` binary: the reference gateway. See [`tollgate_gateway`].

fn main() -> std::process::ExitCode {
    tollgate_gateway::cli_main()
}
