//! Blocks freed by another thread go back to their page's owner, which
//! must count them right: too few and the emptied page is never released,
//! too many and its count of blocks in use wraps (a panic in a debug
//! build). One test in its own process, so the page figures are its own.

#[test]
fn pages_emptied_by_frees_from_another_thread_are_released() {
    // A size class nothing else in this process uses: 21 blocks per page.
    const SIZE: usize = 3000;
    for round in 0..3 {
        let before = fortalloc::stats().pages.current;
        let blocks: Vec<usize> = (0..210).map(|_| fortalloc::malloc(SIZE) as usize).collect();
        assert!(blocks.iter().all(|&p| p != 0));
        let during = fortalloc::stats().pages.current;
        assert!(during >= before + 10, "round {round}: {before} -> {during} pages");
        std::thread::spawn(move || {
            for p in blocks {
                // SAFETY: live blocks of the other thread, freed once.
                unsafe { fortalloc::free(p as *mut u8) };
            }
        })
        .join()
        .expect("freeing thread");
        // The owner takes the frees back and gives the empty pages up.
        fortalloc::collect(true);
        let after = fortalloc::stats().pages.current;
        assert!(
            after <= before + 1,
            "round {round}: {before} pages before, {during} with the blocks, {after} after"
        );
    }
}
