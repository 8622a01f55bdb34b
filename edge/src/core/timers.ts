/**
 * clearTimeout for a timer that may not be set. The hosts' typings disagree on what "no timer"
 * is (null for workers-types, undefined for the DOM's), so the core never passes either.
 */
export function cancelTimer(timer: ReturnType<typeof setTimeout> | undefined): void {
  if (timer !== undefined) clearTimeout(timer);
}
