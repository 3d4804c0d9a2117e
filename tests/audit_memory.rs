//! Exporting stays within constant memory: a 100,000-event export allocates no more at its
//! peak than a 10,000-event one. Alone in its own test binary because it counts every
//! allocation of the process. (SQLite's own page cache is allocated by its C code, outside
//! this count; it is bounded by SQLite's cache size. The benchmark measures the whole
//! process's peak RSS for a 1,000,000-event export: BENCHMARKS.md.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use seedvault::audit::export::{self, ExportFilter, Format};
use seedvault::store::audit::AuditFilter;
use seedvault::store::Store;
use seedvault::vault::open::{self, SlotRequest};
use seedvault::vault::Vault;
use time::OffsetDateTime;

/// The system allocator, keeping the bytes live now and the most live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated above the level when the export started, and bytes written.
fn export_peak(store: &Store, vault: &Vault, plan: &export::ExportPlan) -> (usize, u64) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut bytes = 0u64;
    let written = export::write(
        &store.audit_source().unwrap(),
        plan,
        vault,
        |chunk| {
            bytes += chunk.len() as u64;
            Ok(())
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(written, plan.count);
    (PEAK.load(Ordering::Relaxed) - before, bytes)
}

#[tokio::test]
async fn a_100_000_event_export_uses_no_more_memory_than_a_10_000_event_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let vault = open::create(
        &store,
        OffsetDateTime::UNIX_EPOCH,
        "test",
        vec![("dev".into(), SlotRequest::Development)],
    )
    .await
    .unwrap();
    seedvault::audit::fixture::fill(
        store.path().unwrap(),
        &vault,
        100_000,
        OffsetDateTime::UNIX_EPOCH,
    )
    .unwrap();
    let plan = export::begin(
        &store,
        &vault,
        OffsetDateTime::UNIX_EPOCH,
        "test",
        Format::Jsonl,
        &ExportFilter::default(),
    )
    .await
    .unwrap();
    assert_eq!(plan.count, 100_001);
    let small = export::ExportPlan {
        through: 10_000,
        count: 10_000,
        filter: AuditFilter::default(),
        ..plan.clone()
    };
    let (small_peak, small_bytes) = export_peak(&store, &vault, &small);
    let (large_peak, large_bytes) = export_peak(&store, &vault, &plan);
    eprintln!(
        "export peak heap: 10,000 events {small_peak} B ({small_bytes} B out); \
         100,001 events {large_peak} B ({large_bytes} B out)"
    );
    assert!(large_bytes > 40_000_000, "the large export is tens of MB");
    assert!(
        large_peak < small_peak + 256 * 1024,
        "peak heap grew with the export's size: {small_peak} B for 10,000 events, {large_peak} B for 100,001"
    );
    assert!(
        large_peak < 4 * 1024 * 1024,
        "peak heap {large_peak} B is more than a few pages and a chunk"
    );
}
