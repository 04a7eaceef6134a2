// The URL fragment holds the link token: page behaviour that must never lose it.

/** Skip links move focus to #main without replacing the fragment (the token). */
export function keepTokenOnSkipLinks(main = document.getElementById('main')) {
  for (const link of document.querySelectorAll('.skip-link')) {
    link.addEventListener('click', (event) => {
      event.preventDefault();
      if (!main.hasAttribute('tabindex')) main.setAttribute('tabindex', '-1');
      main.focus();
    });
  }
}

/** Another link pasted into this tab changes only the fragment: start again with it. */
export function reloadOnNewLink() {
  window.addEventListener('hashchange', () => location.reload());
}
