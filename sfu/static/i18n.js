// Dutch and English strings for every Invigil page, from one merged catalogue,
// and the helpers that put them on the page. Nothing is stored: the language
// comes from the browser each time and a switch lasts as long as the page.
//
// API (shared by all pages):
//   catalogue                      { nl: {key: text}, en: {key: text} }, merged
//   t(key, vars = {})              text in the current language; `{name}` is
//                                  replaced by vars.name; falls back to English,
//                                  then to the key itself
//   currentLanguage()              'nl' | 'en'
//   setLanguage(lang)              switches, sets <html lang>, retranslates the
//                                  page and dispatches 'languagechange' on document
//   translatePage(root = document) fills, in root and below:
//                                    data-i18n="key"             -> textContent
//                                    data-i18n-aria-label="key"  -> aria-label
//                                    data-i18n-placeholder="key" -> placeholder
//                                    data-i18n-title="key"       -> title
//                                  with data-i18n-vars='{"name":"…"}' (JSON) as vars
//   localize({ nl, en })           picks the current language from a server
//                                  message such as error.message
//   locale()                       'nl-NL' | 'en-GB', for dates and numbers
//   setVariant(name | null)        e.g. 'oral': t(key) then prefers `key_oral` where the
//                                  catalogue has it ("examiner" for "surveillant"), and
//                                  the page is retranslated
//   wireLanguageButtons(onChange)  [data-lang="nl|en"] buttons switch the language;
//                                  after every switch their aria-pressed follows
//                                  and onChange() runs

import common from './catalogue/common.js';
import student from './catalogue/student.js';
import desk from './catalogue/desk.js';

export const LANGUAGES = ['nl', 'en'];

export const catalogue = {
  nl: { ...common.nl, ...student.nl, ...desk.nl },
  en: { ...common.en, ...student.en, ...desk.en },
};

function languageFromBrowser() {
  const preferred = globalThis.navigator?.languages ?? [globalThis.navigator?.language ?? ''];
  for (const tag of preferred) {
    const primary = String(tag).toLowerCase().split('-')[0];
    if (LANGUAGES.includes(primary)) return primary;
  }
  return 'en';
}

let language = languageFromBrowser();

export function currentLanguage() {
  return language;
}

let variant = null;

export function setVariant(name) {
  variant = name || null;
  translatePage(document);
}

export function t(key, vars = {}) {
  const varied = variant && `${key}_${variant}` in catalogue.en ? `${key}_${variant}` : key;
  const text = catalogue[language]?.[varied] ?? catalogue.en[varied] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

export function localize(texts) {
  if (texts == null) return '';
  if (typeof texts === 'string') return texts;
  return texts[language] ?? texts.en ?? texts.nl ?? '';
}

export function locale() {
  return language === 'nl' ? 'nl-NL' : 'en-GB';
}

function varsOf(element) {
  const raw = element.dataset.i18nVars;
  if (!raw) return {};
  try {
    return JSON.parse(raw);
  } catch {
    return {};
  }
}

const ATTRIBUTE_TARGETS = [
  ['i18nAriaLabel', 'aria-label'],
  ['i18nPlaceholder', 'placeholder'],
  ['i18nTitle', 'title'],
];

function translateElement(element) {
  const vars = varsOf(element);
  if (element.dataset.i18n) element.textContent = t(element.dataset.i18n, vars);
  for (const [dataKey, attribute] of ATTRIBUTE_TARGETS) {
    const key = element.dataset[dataKey];
    if (key) element.setAttribute(attribute, t(key, vars));
  }
}

export function translatePage(root = document) {
  const selector = '[data-i18n], [data-i18n-aria-label], [data-i18n-placeholder], [data-i18n-title]';
  if (root instanceof Element && root.matches(selector)) translateElement(root);
  for (const element of root.querySelectorAll(selector)) translateElement(element);
}

export function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) throw new RangeError(`unsupported language: ${lang}`);
  language = lang;
  document.documentElement.lang = lang;
  translatePage(document);
  document.dispatchEvent(new CustomEvent('languagechange', { detail: lang }));
}

export function wireLanguageButtons(onChange = () => {}) {
  const buttons = document.querySelectorAll('[data-lang]');
  for (const button of buttons) button.addEventListener('click', () => setLanguage(button.dataset.lang));
  document.addEventListener('languagechange', () => {
    for (const button of buttons) button.setAttribute('aria-pressed', String(button.dataset.lang === language));
    onChange();
  });
}
