//! Batch buffers that go back to their [`Gatherer`](super::Gatherer) when the last reader of a
//! batch drops them, so that the next batch is written into memory that is already mapped.
//!
//! A fresh megabyte-sized allocation costs a page fault per 4 KiB page on first touch (and the
//! allocator may hand the pages back to the kernel on free, with a TLB shootdown across the
//! loader's threads): on a 50,000 x 20,000 corpus that was 60 to 110 faults per batch of 256
//! cells. A pooled buffer is faulted in once.
//!
//! The pool only keeps buffers that were alive at the same time before, so it never holds
//! more memory than the loader's peak; buffers dropped after the pool is gone are freed as
//! usual.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::ArrowNativeType;

/// Free buffers kept per element type: enough for a prefetch queue of 8, the gathering
/// threads and a few batches held by the consumer.
const SHELVED: usize = 16;

/// Free buffers by element type.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    u16: Mutex<Vec<Vec<u16>>>,
    u32: Mutex<Vec<Vec<u32>>>,
    u64: Mutex<Vec<Vec<u64>>>,
    i32: Mutex<Vec<Vec<i32>>>,
    f32: Mutex<Vec<Vec<f32>>>,
    f64: Mutex<Vec<Vec<f64>>>,
}

/// An element type the pool keeps buffers of.
pub(crate) trait Pooled: ArrowNativeType + std::panic::RefUnwindSafe {
    fn shelf(pool: &BufferPool) -> &Mutex<Vec<Vec<Self>>>;
}

macro_rules! pooled {
    ($($t:ident),*) => {$(
        impl Pooled for $t {
            fn shelf(pool: &BufferPool) -> &Mutex<Vec<Vec<$t>>> {
                &pool.$t
            }
        }
    )*};
}
pooled!(u16, u32, u64, i32, f32, f64);

impl BufferPool {
    /// An empty vector with room for at least `capacity` elements: the smallest free buffer
    /// that fits, else a new one with a quarter of headroom so that later, slightly larger
    /// batches fit too.
    pub(crate) fn take<T: Pooled>(&self, capacity: usize) -> Vec<T> {
        let mut shelf = T::shelf(self).lock().unwrap_or_else(|p| p.into_inner());
        let best = shelf
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= capacity)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut v = shelf.swap_remove(i);
                v.clear();
                v
            }
            None => Vec::with_capacity(capacity + capacity / 4),
        }
    }

    /// Shelves a buffer; with a full shelf it replaces the smallest one, if smaller.
    fn give<T: Pooled>(&self, v: Vec<T>) {
        if v.capacity() == 0 {
            return;
        }
        let mut shelf = T::shelf(self).lock().unwrap_or_else(|p| p.into_inner());
        if shelf.len() < SHELVED {
            shelf.push(v);
        } else if let Some((i, _)) = shelf
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.capacity())
            .filter(|(_, s)| s.capacity() < v.capacity())
        {
            shelf[i] = v;
        }
    }

    /// An Arrow buffer over `v` with no copy; `v` comes back to this pool when Arrow drops it.
    pub(crate) fn buffer<T: Pooled>(self: &Arc<Self>, v: Vec<T>) -> ScalarBuffer<T> {
        let len = v.len();
        let bytes = std::mem::size_of_val(v.as_slice());
        // A Vec's pointer is never null (dangling but aligned when empty).
        let ptr = NonNull::new(v.as_ptr() as *mut u8).expect("Vec pointers are non-null");
        let owner = Arc::new(Lease {
            vec: v,
            home: Arc::downgrade(self),
        });
        // SAFETY: `ptr` points to `bytes` initialised bytes owned by `owner.vec`, whose heap
        // block does not move with the Vec and is neither written nor freed before `owner` is
        // dropped, which Arrow does only after its last reference to the buffer is gone.
        let buffer = unsafe { Buffer::from_custom_allocation(ptr, bytes, owner) };
        ScalarBuffer::new(buffer, 0, len)
    }
}

/// Owns a pooled vector while Arrow buffers point into it.
struct Lease<T: Pooled> {
    vec: Vec<T>,
    home: Weak<BufferPool>,
}

impl<T: Pooled> Drop for Lease<T> {
    fn drop(&mut self) {
        if let Some(pool) = self.home.upgrade() {
            pool.give(std::mem::take(&mut self.vec));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_without_a_new_allocation() {
        let pool = Arc::new(BufferPool::default());
        let mut v = pool.take::<u16>(1000);
        v.extend(0..1000u16);
        let first = v.as_ptr();
        let buf = pool.buffer(v);
        assert_eq!(buf.len(), 1000);
        assert_eq!(buf[999], 999);
        let clone = buf.clone();
        drop(buf);
        // Still referenced: the next take must not hand out the same memory.
        let other = pool.take::<u16>(1000);
        assert_ne!(other.as_ptr(), first);
        drop(clone);
        let again = pool.take::<u16>(900);
        assert_eq!(again.as_ptr(), first);
        assert!(again.is_empty() && again.capacity() >= 1000);
    }

    #[test]
    fn the_smallest_fitting_buffer_is_chosen_and_types_do_not_mix() {
        let pool = Arc::new(BufferPool::default());
        let held: Vec<_> = [10usize, 1000, 100]
            .into_iter()
            .map(|n| pool.buffer(Vec::<f32>::with_capacity(n)))
            .collect();
        drop(held);
        assert_eq!(pool.take::<f32>(50).capacity(), 100);
        assert_eq!(pool.take::<f32>(50).capacity(), 1000);
        // Nothing on the f64 shelf: a new buffer with headroom.
        assert!(pool.take::<f64>(50).capacity() >= 62);
    }

    #[test]
    fn a_full_shelf_keeps_the_largest_buffers() {
        let pool = Arc::new(BufferPool::default());
        let held: Vec<_> = (1..=SHELVED + 4)
            .map(|n| pool.buffer(Vec::<u64>::with_capacity(n * 100)))
            .collect();
        drop(held);
        let shelf = pool.u64.lock().unwrap();
        assert_eq!(shelf.len(), SHELVED);
        assert!(shelf.iter().all(|v| v.capacity() > 400));
    }

    #[test]
    fn buffers_outliving_the_pool_are_freed() {
        let pool = Arc::new(BufferPool::default());
        let mut v = pool.take::<i32>(4);
        v.extend([1, 2, 3, 4]);
        let buf = pool.buffer(v);
        drop(pool);
        assert_eq!(buf.iter().sum::<i32>(), 10);
    }
}
