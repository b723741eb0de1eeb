//! SAPO's replay buffer: a FIFO of training pairs with draw counts
//! (docs/algorithms.md, SAPO "Replay buffer").
//!
//! New pairs go in at the back; at capacity the oldest falls out. A training
//! batch is drawn **with replacement** either uniformly or with item weight
//! `1/(times_drawn + 1)`, normalised, which favours pairs not yet trained on.
//! As in the authors' code, the weights are fixed while one batch is drawn
//! and every drawn item's count goes up by one afterwards; unlike their code,
//! the counts survive a checkpoint (the whole state serialises with serde).
//!
//! Weighted draws walk a sum tree over the slots: O(log n) per draw and per
//! update, not a scan. Each internal node is recomputed from its two children
//! (never adjusted by a delta), so the tree is a pure function of the weights
//! and a deserialised buffer draws exactly what the original would have.

use alloc::vec::Vec;

use crate::rng::SapoRng;

/// How a training batch is drawn from the buffer.
///
/// ```
/// use sapo_core::replay::SamplingPolicy;
/// assert_eq!(SamplingPolicy::default(), SamplingPolicy::LeastDrawn);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SamplingPolicy {
    /// Weight `1/(times_drawn + 1)`, normalised: the authors' policy.
    #[default]
    LeastDrawn,
    /// Every stored item equally likely.
    Uniform,
}

/// Why a buffer operation was refused.
///
/// ```
/// use sapo_core::replay::{ReplayBuffer, ReplayError};
/// assert_eq!(ReplayBuffer::<u8>::new(0).unwrap_err(), ReplayError::ZeroCapacity);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A buffer must hold at least one item.
    #[error("replay buffer capacity must be at least 1")]
    ZeroCapacity,
    /// Nothing to draw from.
    #[error("cannot draw from an empty replay buffer")]
    Empty,
    /// A deserialised state is inconsistent.
    #[error("corrupt replay buffer state: {0}")]
    CorruptState(&'static str),
}

/// One stored item with its bookkeeping.
///
/// ```
/// let mut buffer = sapo_core::replay::ReplayBuffer::new(4)?;
/// buffer.push('x');
/// let entry = buffer.get(0).unwrap();
/// assert_eq!((entry.item, entry.times_drawn, entry.insertion_index), ('x', 0, 0));
/// # Ok::<(), sapo_core::replay::ReplayError>(())
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry<T> {
    /// The stored item (for SAPO: a prompt, chosen and rejected sequence).
    pub item: T,
    /// How many times the item has been drawn into a training batch.
    pub times_drawn: u64,
    /// Position in the order of all insertions ever made (0 = first).
    pub insertion_index: u64,
}

/// A FIFO replay buffer with weighted sampling; see the [module docs](self).
///
/// ```
/// use sapo_core::replay::{ReplayBuffer, SamplingPolicy};
/// use sapo_core::rng::SapoRng;
///
/// let mut buffer = ReplayBuffer::new(2)?;
/// buffer.push("a");
/// buffer.push("b");
/// assert_eq!(buffer.push("c"), Some("a")); // the oldest falls out
///
/// let mut rng = SapoRng::from_seed_u64(0);
/// let drawn = buffer.draw(4, SamplingPolicy::LeastDrawn, &mut rng)?;
/// assert_eq!(drawn.len(), 2); // at most `len()` items per batch, as the authors
/// let total_draws: u64 = buffer.entries().map(|e| e.times_drawn).sum();
/// assert_eq!(total_draws, 2);
///
/// // The whole state, counts included, round-trips through postcard.
/// let bytes = postcard::to_allocvec(&buffer).unwrap();
/// let restored: ReplayBuffer<&str> = postcard::from_bytes(&bytes).unwrap();
/// assert_eq!(restored, buffer);
/// # Ok::<(), sapo_core::replay::ReplayError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReplayBuffer<T> {
    capacity: usize,
    /// Physical slots; once full, `oldest` marks the logical start.
    slots: Vec<Entry<T>>,
    oldest: usize,
    next_insertion_index: u64,
    weights: SumTree,
}

impl<T: PartialEq> PartialEq for ReplayBuffer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.capacity == other.capacity
            && self.slots == other.slots
            && self.oldest == other.oldest
            && self.next_insertion_index == other.next_insertion_index
    }
}

impl<T> ReplayBuffer<T> {
    /// An empty buffer holding at most `capacity` items (SAPO: 2000).
    ///
    /// # Errors
    /// [`ReplayError::ZeroCapacity`].
    pub fn new(capacity: usize) -> Result<Self, ReplayError> {
        if capacity == 0 {
            return Err(ReplayError::ZeroCapacity);
        }
        Ok(ReplayBuffer {
            capacity,
            slots: Vec::new(),
            oldest: 0,
            next_insertion_index: 0,
            weights: SumTree::new(capacity),
        })
    }

    /// The most items the buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many items it holds now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends `item` with a draw count of 0; returns the evicted oldest item
    /// when the buffer was full.
    pub fn push(&mut self, item: T) -> Option<T> {
        let entry = Entry { item, times_drawn: 0, insertion_index: self.next_insertion_index };
        self.next_insertion_index += 1;
        if self.slots.len() < self.capacity {
            self.slots.push(entry);
            self.weights.set(self.slots.len() - 1, 1.0);
            None
        } else {
            let slot = self.oldest;
            let evicted = core::mem::replace(&mut self.slots[slot], entry);
            self.weights.set(slot, 1.0);
            self.oldest = (self.oldest + 1) % self.capacity;
            Some(evicted.item)
        }
    }

    /// The entry at logical position `index` (0 = oldest).
    pub fn get(&self, index: usize) -> Option<&Entry<T>> {
        (index < self.slots.len()).then(|| &self.slots[self.physical(index)])
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<T>> + '_ {
        (0..self.slots.len()).map(move |index| &self.slots[self.physical(index)])
    }

    /// Draws `min(batch_size, len())` items with replacement under `policy`
    /// and returns their logical positions (0 = oldest), in draw order. The
    /// weights stay fixed during the batch; each drawn item's count then
    /// goes up by one (by two if drawn twice).
    ///
    /// # Errors
    /// [`ReplayError::Empty`].
    pub fn draw(
        &mut self,
        batch_size: usize,
        policy: SamplingPolicy,
        rng: &mut SapoRng,
    ) -> Result<Vec<usize>, ReplayError> {
        if self.slots.is_empty() {
            return Err(ReplayError::Empty);
        }
        let draws = batch_size.min(self.slots.len());
        let mut physical_slots = Vec::with_capacity(draws);
        for _ in 0..draws {
            let slot = match policy {
                SamplingPolicy::LeastDrawn => self.weights.find(rng.next_f64()),
                SamplingPolicy::Uniform => {
                    let index = rng.below(self.slots.len() as u64).map_or(0, |index| index as usize);
                    self.physical(index)
                }
            };
            physical_slots.push(slot);
        }
        for &slot in &physical_slots {
            let entry = &mut self.slots[slot];
            entry.times_drawn += 1;
            self.weights.set(slot, least_drawn_weight(entry.times_drawn));
        }
        Ok(physical_slots.into_iter().map(|slot| self.logical(slot)).collect())
    }

    /// The probability that one draw under [`SamplingPolicy::LeastDrawn`]
    /// picks logical position `index`: `w_i / Σ w` with `w = 1/(times_drawn+1)`.
    pub fn least_drawn_probability(&self, index: usize) -> Option<f64> {
        let entry = self.get(index)?;
        Some(least_drawn_weight(entry.times_drawn) / self.weights.total())
    }

    fn physical(&self, index: usize) -> usize {
        if self.slots.len() < self.capacity { index } else { (self.oldest + index) % self.capacity }
    }

    fn logical(&self, slot: usize) -> usize {
        if self.slots.len() < self.capacity { slot } else { (slot + self.capacity - self.oldest) % self.capacity }
    }
}

fn least_drawn_weight(times_drawn: u64) -> f64 {
    1.0 / (times_drawn as f64 + 1.0)
}

/// The serialised form: the physical layout, so the rebuilt sum tree is
/// bit-identical to the original's.
#[derive(serde::Serialize)]
struct StateRef<'a, T> {
    capacity: u64,
    oldest: u64,
    next_insertion_index: u64,
    slots: &'a [Entry<T>],
}

#[derive(serde::Deserialize)]
struct State<T> {
    capacity: u64,
    oldest: u64,
    next_insertion_index: u64,
    slots: Vec<Entry<T>>,
}

impl<T: serde::Serialize> serde::Serialize for ReplayBuffer<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StateRef {
            capacity: self.capacity as u64,
            oldest: self.oldest as u64,
            next_insertion_index: self.next_insertion_index,
            slots: &self.slots,
        }
        .serialize(serializer)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ReplayBuffer<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let state = State::<T>::deserialize(deserializer)?;
        ReplayBuffer::from_state(state).map_err(serde::de::Error::custom)
    }
}

impl<T> ReplayBuffer<T> {
    fn from_state(state: State<T>) -> Result<Self, ReplayError> {
        let capacity = usize::try_from(state.capacity).map_err(|_| ReplayError::CorruptState("capacity too large"))?;
        let oldest = usize::try_from(state.oldest).map_err(|_| ReplayError::CorruptState("oldest out of range"))?;
        let mut buffer = ReplayBuffer::new(capacity).map_err(|_| ReplayError::CorruptState("capacity is zero"))?;
        if state.slots.len() > capacity {
            return Err(ReplayError::CorruptState("more items than capacity"));
        }
        if oldest != 0 && (state.slots.len() < capacity || oldest >= capacity) {
            return Err(ReplayError::CorruptState("oldest slot out of range"));
        }
        if state.slots.iter().any(|entry| entry.insertion_index >= state.next_insertion_index) {
            return Err(ReplayError::CorruptState("insertion index beyond the insertion counter"));
        }
        for (slot, entry) in state.slots.iter().enumerate() {
            buffer.weights.set(slot, least_drawn_weight(entry.times_drawn));
        }
        buffer.slots = state.slots;
        buffer.oldest = oldest;
        buffer.next_insertion_index = state.next_insertion_index;
        Ok(buffer)
    }
}

/// A complete binary tree of non-negative weights over `leaves` slots.
#[derive(Debug, Clone)]
struct SumTree {
    /// Number of leaves: the capacity rounded up to a power of two.
    leaves: usize,
    /// `nodes[1]` is the root; leaf `i` is `nodes[leaves + i]`.
    nodes: Vec<f64>,
}

impl SumTree {
    fn new(capacity: usize) -> Self {
        let leaves = capacity.next_power_of_two();
        SumTree { leaves, nodes: alloc::vec![0.0; 2 * leaves] }
    }

    fn total(&self) -> f64 {
        self.nodes[1]
    }

    fn set(&mut self, slot: usize, weight: f64) {
        let mut node = self.leaves + slot;
        self.nodes[node] = weight;
        while node > 1 {
            node /= 2;
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1];
        }
    }

    /// The slot whose cumulative-weight interval contains `unit · total`,
    /// for `unit` in `[0, 1)`. Never a zero-weight slot while the total is
    /// positive: a descent to the right only happens into positive weight.
    fn find(&self, unit: f64) -> usize {
        let mut target = unit * self.total();
        let mut node = 1;
        while node < self.leaves {
            let left = self.nodes[2 * node];
            if target < left || self.nodes[2 * node + 1] <= 0.0 {
                node *= 2;
            } else {
                target -= left;
                node = 2 * node + 1;
            }
        }
        node - self.leaves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_and_empty_draw_are_errors() {
        assert_eq!(ReplayBuffer::<u8>::new(0).err(), Some(ReplayError::ZeroCapacity));
        let mut buffer = ReplayBuffer::<u8>::new(3).expect("capacity 3");
        let mut rng = SapoRng::from_seed_u64(1);
        assert_eq!(buffer.draw(2, SamplingPolicy::LeastDrawn, &mut rng), Err(ReplayError::Empty));
    }

    #[test]
    fn entries_keep_insertion_order_after_wrapping() {
        let mut buffer = ReplayBuffer::new(3).expect("capacity 3");
        for item in 0..8u32 {
            buffer.push(item);
        }
        let items: Vec<u32> = buffer.entries().map(|entry| entry.item).collect();
        assert_eq!(items, [5, 6, 7]);
        let order: Vec<u64> = buffer.entries().map(|entry| entry.insertion_index).collect();
        assert_eq!(order, [5, 6, 7]);
    }

    #[test]
    fn an_evicted_slot_starts_again_at_count_zero() {
        let mut buffer = ReplayBuffer::new(2).expect("capacity 2");
        buffer.push(0u8);
        buffer.push(1u8);
        let mut rng = SapoRng::from_seed_u64(4);
        buffer.draw(2, SamplingPolicy::LeastDrawn, &mut rng).expect("non-empty");
        buffer.push(2u8);
        let newest = buffer.get(1).expect("two items");
        assert_eq!((newest.item, newest.times_drawn), (2, 0));
        let probability = buffer.least_drawn_probability(1).expect("two items");
        let oldest_weight = 1.0 / (buffer.get(0).expect("two items").times_drawn as f64 + 1.0);
        assert!((probability - 1.0 / (1.0 + oldest_weight)).abs() < 1e-15);
    }

    #[test]
    fn corrupt_states_are_refused() {
        let state = State {
            capacity: 2,
            oldest: 0,
            next_insertion_index: 1,
            slots: alloc::vec![
                Entry { item: 0u8, times_drawn: 0, insertion_index: 0 },
                Entry { item: 1u8, times_drawn: 0, insertion_index: 1 },
            ],
        };
        assert!(matches!(ReplayBuffer::from_state(state), Err(ReplayError::CorruptState(_))));
    }
}
