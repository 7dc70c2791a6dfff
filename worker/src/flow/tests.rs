use super::*;

#[test]
fn the_buffer_keeps_the_newest_within_its_bounds() {
    let mut inbox = Inbox::default();
    let dropped: u64 = (0..100_000u32).map(|i| inbox.push(i.to_le_bytes().to_vec())).sum();
    assert_eq!(dropped, 100_000 - MAX_BUFFERED as u64);
    assert_eq!(inbox.frames.len(), MAX_BUFFERED);
    assert_eq!(inbox.pop().unwrap(), (100_000 - MAX_BUFFERED as u32).to_le_bytes());
    let mut inbox = Inbox::default();
    let big = MAX_BUFFERED_BYTES / 4 + 1;
    let dropped: u64 = (0..10).map(|_| inbox.push(vec![0; big])).sum();
    assert_eq!((dropped, inbox.frames.len()), (7, 3), "bytes bound too");
    assert!(inbox.bytes <= MAX_BUFFERED_BYTES);
    let mut inbox = Inbox::default();
    assert_eq!(inbox.push(vec![0; MAX_BUFFERED_BYTES * 2]), 0, "the newest is kept whatever its size");
}

#[test]
fn sleep_times_stay_in_their_range() {
    let mut rng = Rng::new(7);
    for _ in 0..10_000 {
        let v = rng.between(10, 20);
        assert!((10..=20).contains(&v));
    }
    assert_eq!(rng.between(5, 5), 5);
    let _ = rng.between(0, u64::MAX);
    let mut seen = [false; 3];
    (0..100).for_each(|_| seen[rng.between(0, 2) as usize] = true);
    assert_eq!(seen, [true; 3]);
}
