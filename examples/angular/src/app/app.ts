import {
  Component,
  CUSTOM_ELEMENTS_SCHEMA,
  DestroyRef,
  ElementRef,
  computed,
  inject,
  signal,
  viewChild,
} from '@angular/core';
// Types only (npm package packages/tollgate-usage); the element itself comes from the
// control-plane (src/index.html).
import type { TollgateUsage, TollgateUsageElement, TollgateUsageErrorDetail } from 'tollgate-usage';

/** How often the dashboard refreshes its widgets, the usage panel among them. */
const REFRESH_MS = 2000;

@Component({
  selector: 'app-root',
  templateUrl: './app.html',
  styleUrl: './app.css',
  // <tollgate-usage> is a custom element, not an Angular component.
  schemas: [CUSTOM_ELEMENTS_SCHEMA],
})
export class App {
  /** The tenant's API key, bound to the panel as a property: never an attribute, never a URL. */
  protected readonly apiKey = signal<string | null>(null);
  /** The panel's figures, from its `tollgate-usage-update` events. */
  protected readonly usage = signal<TollgateUsage | null>(null);
  protected readonly problem = signal<string | null>(null);
  protected readonly nearLimit = computed(() => {
    const usage = this.usage();
    return usage !== null && usage.limit > 0 && usage.used >= 0.8 * usage.limit;
  });
  private readonly panel = viewChild.required<ElementRef<TollgateUsageElement>>('panel');

  constructor() {
    // The dashboard's polling loop: it refreshes every widget, the panel among them
    // (interval="0" on the panel: no timer of its own).
    const loop = setInterval(() => this.refresh(), REFRESH_MS);
    inject(DestroyRef).onDestroy(() => clearInterval(loop));
    this.loadSession().catch(() => this.problem.set('Your session could not be loaded.'));
  }

  private async loadSession(): Promise<void> {
    // The signed-in user's tenant key comes from the dashboard's backend; session.json
    // stands in for it here.
    const response = await fetch('session.json', { cache: 'no-store' });
    const session: { tollgateKey: string | null } = await response.json();
    this.apiKey.set(session.tollgateKey);
  }

  private refresh(): void {
    // Until the component script has run, the element has no refresh(): nothing to do yet.
    this.panel().nativeElement.refresh?.();
  }

  protected onUsage(event: Event): void {
    this.usage.set((event as CustomEvent<TollgateUsage>).detail);
    this.problem.set(null);
  }

  protected onUsageError(event: Event): void {
    const { state, message } = (event as CustomEvent<TollgateUsageErrorDetail>).detail;
    this.problem.set(state === 'unauthorized' ? 'Your API key was refused: ask your admin for a new one.' : message);
  }
}
