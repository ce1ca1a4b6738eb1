fn main() {
    std::process::exit(pact::agent::main());
}
