//! Running one batch call and answering its callers.

use crate::backend::BatchOutput;
use crate::error::{BatchFailed, ItemFailed, MissingResult};
use crate::queue::{Partition, Shared, Slot};
use futures_util::FutureExt;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::error::Panicked;

/// Held by a running batch: frees its in-flight place and wakes the flusher however the
/// batch ends, the task being dropped included.
pub(crate) struct InFlight<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) shared: Arc<Shared<Req, T, K>>,
    pub(crate) part: Arc<Partition<Req, T, K>>,
    /// The in-flight place, held until the batch ends.
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl<Req, T, K> Drop for InFlight<Req, T, K>
where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // Relaxed: a statistic.
        self.shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        // The backend may be idle now, which can make a waiting batch go at once.
        self.part.wake.notify_one();
        // The last batch of an idle key: forget the key, so that many short-lived keys do not
        // pile up. A submitter still holding the partition starts a flusher of its own.
        if let Some(key) = &self.part.key
            && !self.part.gate.is_running()
            && self.part.depth() == 0
            && self.part.in_flight_now(self.shared.config.max_in_flight) <= 1
        {
            self.shared
                .keyed
                .remove_if(key, |_, p| Arc::ptr_eq(p, &self.part));
        }
        self.shared.drained.notify_waiters();
    }
}

pub(crate) async fn execute<Req, T, K>(
    fut: futures_util::future::BoxFuture<'static, BatchOutput<T>>,
    slots: Vec<Slot<T>>,
    map: Option<Vec<usize>>,
    clone: Option<fn(&T) -> T>,
    guard: InFlight<Req, T, K>,
) where
    Req: Send + 'static,
    T: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    let started = Instant::now();
    let output = AssertUnwindSafe(fut).catch_unwind().await;
    guard
        .part
        .record_exec(started.elapsed(), guard.shared.config.ewma_alpha);
    match output {
        Ok(Ok(results)) => match (map, clone) {
            (Some(map), Some(clone)) => deliver_folded(results, slots, &map, clone),
            _ => deliver(results, slots),
        },
        Ok(Err(error)) => {
            tracing::trace!(%error, callers = slots.len(), "batch call failed");
            guard.shared.stats.failed();
            fail_all(slots, &BatchFailed::new(Arc::new(error)));
        }
        Err(payload) => {
            let panicked = Panicked::from_payload(&*payload);
            tracing::trace!(%panicked, callers = slots.len(), "batch call panicked");
            guard.shared.stats.panicked();
            fail_all(slots, &panicked);
        }
    }
    drop(guard);
}

pub(crate) fn fail_all<T, E>(slots: Vec<Slot<T>>, error: &E)
where
    E: std::error::Error + Clone + Send + Sync + 'static,
{
    for slot in slots {
        let _ = slot.send(Err(Box::new(error.clone())));
    }
}

fn missing() -> BoxError {
    Box::new(MissingResult::new())
}

fn deliver<T>(results: Vec<Option<Result<T, BoxError>>>, slots: Vec<Slot<T>>) {
    let mut results = results.into_iter();
    for slot in slots {
        let result = results.next().flatten().unwrap_or_else(|| Err(missing()));
        // A caller that went away discards its answer.
        let _ = slot.send(result);
    }
}

/// Hands each unique result to every caller folded into it: clones of an `Ok` to all but the
/// last, a shared [`ItemFailed`] for an error with more than one caller.
fn deliver_folded<T>(
    results: Vec<Option<Result<T, BoxError>>>,
    slots: Vec<Slot<T>>,
    map: &[usize],
    clone: fn(&T) -> T,
) {
    let unique = map.iter().copied().max().map_or(0, |m| m + 1);
    let mut results: Vec<_> = results
        .into_iter()
        .chain(std::iter::repeat_with(|| None))
        .take(unique)
        .collect();
    let mut remaining = vec![0usize; unique];
    for &u in map {
        remaining[u] += 1;
    }
    let mut shared_errors: Vec<Option<Arc<BoxError>>> = vec![None; unique];
    for (slot, &u) in slots.into_iter().zip(map) {
        remaining[u] -= 1;
        let last = remaining[u] == 0;
        let result = if let Some(error) = &shared_errors[u] {
            Err(Box::new(ItemFailed::new(error.clone())) as BoxError)
        } else {
            match &results[u] {
                None => Err(missing()),
                Some(Ok(value)) if !last => Ok(clone(value)),
                Some(Err(_)) if !last => {
                    let Some(Err(error)) = results[u].take() else {
                        unreachable!("matched Err")
                    };
                    let error = Arc::new(error);
                    shared_errors[u] = Some(error.clone());
                    Err(Box::new(ItemFailed::new(error)) as BoxError)
                }
                Some(_) => results[u].take().expect("matched Some"),
            }
        };
        let _ = slot.send(result);
    }
}

/// How many leading requests of `reqs` hold at most `max` distinct ones: a folded batch takes
/// every caller of its distinct requests.
pub(crate) fn unique_prefix<Req: Hash + Eq>(
    reqs: &mut dyn Iterator<Item = &Req>,
    max: usize,
) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for req in reqs {
        if !seen.contains(req) {
            if seen.len() == max {
                break;
            }
            seen.insert(req);
        }
        n += 1;
    }
    n
}

/// Folds equal requests: the unique ones in first-seen order and, for each input, the index of
/// its unique request.
pub(crate) fn fold_duplicates<Req: Hash + Eq>(reqs: Vec<Req>) -> (Vec<Req>, Vec<usize>) {
    let mut first: std::collections::HashMap<&Req, usize> =
        std::collections::HashMap::with_capacity(reqs.len());
    let mut map = Vec::with_capacity(reqs.len());
    let mut keep = Vec::with_capacity(reqs.len());
    for req in &reqs {
        let next = first.len();
        let u = *first.entry(req).or_insert(next);
        keep.push(u == next);
        map.push(u);
    }
    drop(first);
    let unique = reqs
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect();
    (unique, map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_prefix_counts_distinct_requests() {
        let reqs = [1, 1, 2, 1, 3, 2, 4];
        assert_eq!(unique_prefix(&mut reqs.iter(), 2), 4);
        assert_eq!(unique_prefix(&mut reqs.iter(), 3), 6);
        assert_eq!(unique_prefix(&mut reqs.iter(), 9), 7);
    }

    #[test]
    fn folds_in_first_seen_order() {
        let (unique, map) = fold_duplicates(vec![3, 1, 3, 2, 1]);
        assert_eq!(unique, vec![3, 1, 2]);
        assert_eq!(map, vec![0, 1, 0, 2, 1]);
    }

    #[tokio::test]
    async fn folded_delivery_clones_and_shares_errors() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4)
            .map(|_| tokio::sync::oneshot::channel::<Result<u32, BoxError>>())
            .unzip();
        let results = vec![Some(Ok(7)), Some(Err(missing()))];
        deliver_folded(results, txs, &[0, 1, 0, 1], |v| *v);
        assert_eq!((&mut rxs[0]).await.unwrap().unwrap(), 7);
        assert!((&mut rxs[1]).await.unwrap().unwrap_err().is::<ItemFailed>());
        assert_eq!((&mut rxs[2]).await.unwrap().unwrap(), 7);
        assert!((&mut rxs[3]).await.unwrap().unwrap_err().is::<ItemFailed>());
    }
}
