//! A glommio timer raced against other work in the same task, as every
//! bounded step of a session races one (`net::with_timeout`): polled again
//! at each wake-up of the task, it must stay registered with the reactor
//! and fire on time (vendor/glommio/PATCHES.md, "A timer polled again by
//! the same task left registered"). This file owns only that check and
//! never touches a broker.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::timer::{sleep, Timer};
use glommio::{LocalExecutorBuilder, Placement};

/// How long the raced timer runs, and how long the test waits for it at
/// most before calling it lost.
const DELAY: Duration = Duration::from_millis(60);
const WATCHDOG: Duration = Duration::from_secs(20);

/// Runs `race` on an executor of its own and returns what it returns. Not
/// joined: if a timer were lost the executor would never finish, and the
/// watchdog fails the test instead of hanging it.
fn on_executor<T, F>(name: &str, race: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let _executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .spawn(move || async move {
            let _ = tx.send(race().await);
        })
        .expect("executor");
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("{name}: the timer did not fire within {WATCHDOG:?}"))
}

#[test]
fn a_timer_polled_at_every_wake_up_of_its_task_fires_on_time() {
    let (elapsed, wake_ups) = on_executor("reactor-timers", || async {
        let start = Instant::now();
        let mut wake_ups = 0u32;
        let timer = Timer::new(DELAY);
        // Millisecond ticks in the same task: each one wakes it, and the
        // race polls the timer again before it is due.
        let ticks = async {
            loop {
                sleep(Duration::from_millis(1)).await;
                wake_ups += 1;
            }
        };
        futures_lite::future::or(
            async {
                timer.await;
            },
            ticks,
        )
        .await;
        (start.elapsed(), wake_ups)
    });
    assert!(elapsed >= DELAY, "fired early, after {elapsed:?}");
    assert!(
        wake_ups >= 10,
        "only {wake_ups} wake-ups before it fired: the re-poll was not exercised"
    );
}

#[test]
fn a_timer_moved_to_another_task_fires_for_that_task() {
    let elapsed = on_executor("reactor-timers-moved", || async {
        let start = Instant::now();
        let mut timer = Timer::new(DELAY);
        // Polled (and registered) once by this task...
        let first = futures_lite::future::poll_once(&mut timer).await;
        assert!(first.is_none(), "due before its delay");
        // ...then awaited by another task, whose waker is not the one the
        // reactor holds: it must register again to be woken.
        glommio::spawn_local(async move {
            timer.await;
        })
        .await;
        start.elapsed()
    });
    assert!(elapsed >= DELAY, "fired early, after {elapsed:?}");
}
