fn main() {
    eprintln!("pact: under construction");
    std::process::exit(1);
}
