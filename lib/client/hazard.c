/* Hazard pointers for the snapshot swap.
 *
 * A reader publishes the snapshot pointer it is about to use in its own
 * slot, then checks that the pointer is still current; the writer, after
 * swapping a snapshot out, frees it only once no slot holds it. Readers
 * never wait and never touch a reference count on the fast path.
 *
 * The slots are one process-wide array rather than one per client: a slot
 * is tied to a thread, and the thread-exit destructor that gives it back
 * must never touch memory a freed client owned. A slot only ever holds one
 * pointer at a time, which is all a reader needs (one decide or pick is one
 * snapshot). Writers of every client scan the whole array: 256 loads per
 * swap. A thread that finds no free slot (more than 256 threads in the
 * process using the SDK) takes the slow path of the caller, a reference
 * taken under the client's swap mutex, and tries to claim a slot again
 * every 4096 calls. */
#include <pthread.h>
#include <stddef.h>

#include "client/internal.h"

static gray__hp_slot g_slots[GRAY__HP_SLOTS];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;
static int g_key_ok;

static _Thread_local gray__hp_slot *t_slot;
static _Thread_local unsigned t_retry; /* calls left before claiming again */

#define RETRY_CALLS 4096u

/* Thread exit: give the slot back. Runs in the exiting thread, so it may
 * also forget the thread's own cached slot; a later call in this thread
 * (from another destructor) then goes the slow way. */
static void slot_destructor(void *v) {
  gray__hp_slot *s = v;
  atomic_store_explicit(&s->ptr, NULL, memory_order_release);
  atomic_store_explicit(&s->owned, 0, memory_order_release);
  t_slot = NULL;
  t_retry = (unsigned)-1;
}

static void make_key(void) { g_key_ok = pthread_key_create(&g_key, slot_destructor) == 0; }

gray__hp_slot *gray__hp_slot_get(void) {
  if (t_slot) return t_slot;
  if (t_retry) {
    t_retry--;
    return NULL;
  }
  pthread_once(&g_once, make_key);
  if (g_key_ok) {
    for (size_t i = 0; i < GRAY__HP_SLOTS; i++) {
      int expect = 0;
      if (atomic_load_explicit(&g_slots[i].owned, memory_order_relaxed)) continue;
      if (!atomic_compare_exchange_strong_explicit(&g_slots[i].owned, &expect, 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
        continue;
      if (pthread_setspecific(g_key, &g_slots[i]) != 0) {
        atomic_store_explicit(&g_slots[i].owned, 0, memory_order_release);
        break;
      }
      t_slot = &g_slots[i];
      return t_slot;
    }
  }
  t_retry = RETRY_CALLS;
  return NULL;
}

int gray__hp_protected(const void *p) {
  for (size_t i = 0; i < GRAY__HP_SLOTS; i++)
    if (atomic_load_explicit(&g_slots[i].ptr, memory_order_seq_cst) == p) return 1;
  return 0;
}
