use super::*;

/// A small body costs less than the two thread hand-offs of the pool; a large one, where a
/// flood's cost lies, must still leave the event loop.
#[tokio::test]
async fn small_bodies_run_on_the_event_loop_and_large_ones_on_the_pool() {
    let cpu = Cpu::new(1);
    let here = std::thread::current().id();
    let small = cpu.run_for(Cpu::INLINE_MAX_BYTES, || std::thread::current().id()).await;
    assert_eq!(small, here);
    let large = cpu.run_for(Cpu::INLINE_MAX_BYTES + 1, || std::thread::current().id()).await;
    assert_ne!(large, here);
}
