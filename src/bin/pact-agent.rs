fn main() {
    eprintln!("pact-agent: under construction");
    std::process::exit(1);
}
