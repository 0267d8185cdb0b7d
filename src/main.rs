fn main() -> std::process::ExitCode {
    pagerhook::cli::main()
}
