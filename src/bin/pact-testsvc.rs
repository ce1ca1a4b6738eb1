fn main() {
    eprintln!("pact-testsvc: under construction");
    std::process::exit(1);
}
