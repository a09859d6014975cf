fn main() -> std::process::ExitCode {
    cnpg_ext_harness::cli::main()
}
