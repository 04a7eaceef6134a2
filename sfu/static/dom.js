// Tiny DOM helpers for every page: an element by its id, and a new element with its
// attributes and children. Text goes in as text (`text`, string children), never as HTML.

export const $ = (id) => document.getElementById(id);

/** `h('p', { class: 'hint', text: '…' }, child, …)`: false, null and undefined attributes are left out, true is empty. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
