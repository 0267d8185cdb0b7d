// glibc malloc was about 30 % of the accept path's samples (issue 16): serde_json and
// handlebars allocate many small, short-lived nodes per request. mimalloc's per-thread free
// lists serve those without glibc's consolidation and arena locks.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pagerhook::cli::main()
}
