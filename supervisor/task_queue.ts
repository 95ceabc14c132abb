/**
 * The bounded FIFO of requests waiting for a worker. Removal from the middle is O(1), for
 * requests that time out or are cancelled while they wait.
 *
 * @module
 */

/**
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TaskQueue } from "./task_queue.ts";
 * const q = new TaskQueue<string>(2);
 * assert.ok(q.push("a") && q.push("b"));
 * assert.equal(q.push("c"), false);
 * assert.equal(q.shift(), "a");
 * assert.equal(q.size, 1);
 * ```
 */
export class TaskQueue<T> {
  // A Set iterates in insertion order, which makes it a FIFO with O(1) delete.
  #items = new Set<T>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.#items.size;
  }

  /** Adds at the back; false when the queue is full. */
  push(item: T): boolean {
    if (this.#items.size >= this.capacity) return false;
    this.#items.add(item);
    return true;
  }

  /** The front, if any, left in place. */
  peek(): T | undefined {
    return this.#items.values().next().value;
  }

  /** Removes and returns the front, if any. */
  shift(): T | undefined {
    const first = this.#items.values().next();
    if (first.done) return undefined;
    this.#items.delete(first.value);
    return first.value;
  }

  /** Whether the item is queued. */
  has(item: T): boolean {
    return this.#items.has(item);
  }

  /** Removes an item wherever it is; false if it was not queued. */
  delete(item: T): boolean {
    return this.#items.delete(item);
  }

  /** Iterates front to back. */
  [Symbol.iterator](): Iterator<T> {
    return this.#items.values();
  }

  /** Removes and returns everything, front first. */
  drain(): T[] {
    const items = [...this.#items];
    this.#items.clear();
    return items;
  }
}
