fn main() {
    std::process::exit(pact::journal::main());
}
