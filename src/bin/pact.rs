fn main() {
    std::process::exit(pact::cli::main());
}
