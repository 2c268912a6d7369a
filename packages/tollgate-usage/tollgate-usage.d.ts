// Types of <tollgate-usage>, Tollgate's API USAGE panel. The module has no runtime exports:
// importing it defines the element (`import "tollgate-usage";`); these types describe it.

/** One minute of the usage history. */
export interface TollgateUsageMinute {
  /** Start of the minute, Unix seconds. */
  start: number;
  admitted: number;
  denied: number;
}

/** The answer of `GET /api/v1/usage`: the detail of `tollgate-usage-update`. */
export interface TollgateUsage {
  tenant_id: string;
  tier: string;
  suspended: boolean;
  /** Requests allowed per window. */
  limit: number;
  window_seconds: number;
  /** Requests admitted in the current (sliding) window. */
  used: number;
  remaining: number;
  /** Seconds until a request leaves the window. */
  reset_seconds: number;
  /** Requests denied in the current window. */
  denied: number;
  month_to_date: number;
  /** The last 60 minutes, oldest first. */
  history: TollgateUsageMinute[];
}

/** What the panel shows; also the host element's `data-state` attribute. */
export type TollgateUsageState = "no-key" | "loading" | "ok" | "unauthorized" | "stale" | "error";

/** The detail of `tollgate-usage-error`. */
export interface TollgateUsageErrorDetail {
  /** The HTTP status, or null when there was no answer (network, timeout, key provider). */
  status: number | null;
  state: "unauthorized" | "stale" | "error";
  message: string;
  /** Seconds until the next attempt; null after a 401 (no retry until the key changes). */
  retryIn: number | null;
}

/**
 * Returns a usage token (minted by your backend with `POST /api/v1/usage/tokens`) or the
 * tenant's API key, or a promise of either; called before every poll. An expired token is
 * retried with the provider's next answer, not treated as a refused key.
 */
export type TollgateTokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

export interface TollgateUsageElement extends HTMLElement {
  /**
   * The tenant's API key, sent only in the `x-api-key` header. Reads back "(set)" or null,
   * never the key. Setting it (even to the same key) starts polling again.
   */
  get apiKey(): "(set)" | null;
  set apiKey(key: string | null | undefined);
  /** Called before every poll instead of `apiKey`. */
  tokenProvider: TollgateTokenProvider | null;
  /** The usage endpoint (the `endpoint` attribute); default `/api/v1/usage`. */
  get endpoint(): string;
  set endpoint(url: string | null | undefined);
  /** Seconds between polls (the `interval` attribute); default 5; 0: only on `refresh()`. */
  get interval(): number;
  set interval(seconds: number | string | null | undefined);
  readonly state: TollgateUsageState | null;
  /** The last figures received (a copy), or null. */
  readonly usage: TollgateUsage | null;
  /**
   * Polls now (for a page driving the panel from its own polling loop). Does nothing without
   * a key, after the key was refused, while backing off after a failure, or while the tab is
   * hidden.
   */
  refresh(): Promise<void>;

  addEventListener<K extends keyof TollgateUsageEventMap>(
    type: K,
    listener: (this: TollgateUsageElement, event: TollgateUsageEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof TollgateUsageEventMap>(
    type: K,
    listener: (this: TollgateUsageElement, event: TollgateUsageEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | EventListenerOptions,
  ): void;
}

export interface TollgateUsageEventMap extends HTMLElementEventMap {
  "tollgate-usage-update": CustomEvent<TollgateUsage>;
  "tollgate-usage-error": CustomEvent<TollgateUsageErrorDetail>;
}

declare global {
  interface HTMLElementTagNameMap {
    "tollgate-usage": TollgateUsageElement;
  }
  // The events bubble and are composed: a listener on any ancestor, or the document, hears them.
  interface GlobalEventHandlersEventMap {
    "tollgate-usage-update": CustomEvent<TollgateUsage>;
    "tollgate-usage-error": CustomEvent<TollgateUsageErrorDetail>;
  }
}
