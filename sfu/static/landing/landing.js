// The landing page at "/": what Invigil is, that a link from the teacher is needed, and
// where the privacy statement is. Dutch or English, following the browser.

import { currentLanguage, setLanguage, wireLanguageButtons } from '/common/i18n.js';

wireLanguageButtons();
setLanguage(currentLanguage());
