// The desk's incidents panel: short notes about a student, in this page's memory only,
// downloadable as plain text until the exam ends (then they are gone with it).

import { $, h } from '/common/dom.js';
import { locale, t } from '/common/i18n.js';
import { setResult } from '/common/staff.js';
import { renderEnding, wireEnding } from './ending.js';
import { timeLabel } from './widgets.js';

const INCIDENT_MAX = 300;

const panel = {
  incidents: [], // { at, studentId, name, note }
  downloaded: true,
  about: () => ({ title: '', surveillant: '' }),
};

/**
 * Wire the panel. `focused()` gives { id, name } of the student in the student view (or
 * null); `about()` gives { title, surveillant } for the downloaded file's heading.
 */
export function wireIncidents({ focused, about }) {
  panel.about = about;
  $('incident-form').addEventListener('submit', (event) => {
    event.preventDefault();
    addIncident(focused());
  });
  $('incidents-download').addEventListener('click', downloadIncidents);
  wireEnding({ download: downloadIncidents, hasNotes: () => panel.incidents.length > 0 });
}

/** True while there are notes that were not downloaded since the last one was added. */
export function unsavedIncidents() {
  return panel.incidents.length > 0 && !panel.downloaded;
}

/** The exam is over: the notes go with it. */
export function dropIncidents() {
  panel.incidents = [];
  panel.downloaded = true;
  renderIncidents();
}

function addIncident(student) {
  const note = $('incident-note').value.trim();
  if (!student) return;
  if (note.length === 0 || note.length > INCIDENT_MAX) {
    setResult('incident-result', () => t('desk.incident.invalid', { max: INCIDENT_MAX }), 'error');
    $('incident-note').focus();
    return;
  }
  const at = new Date();
  panel.incidents.push({ at, studentId: student.id, name: student.name, note });
  panel.downloaded = false;
  $('incident-note').value = '';
  setResult('incident-result', () => t('desk.incident.noted', { time: timeLabel(at) }));
  renderIncidents();
}

export function renderIncidents() {
  $('incident-list').replaceChildren(...panel.incidents.map((incident) => h('li', {},
    h('span', { class: 'log-time', text: timeLabel(incident.at) }), ' ',
    h('strong', { text: incident.name }), ': ', incident.note)));
  $('incidents-empty').hidden = panel.incidents.length > 0;
  $('incidents-download').hidden = panel.incidents.length === 0;
  renderEnding();
}

function incidentsText() {
  const { title, surveillant } = panel.about();
  const lines = [
    t('desk.incidents.file_heading'),
    t('desk.incidents.file_exam', { title }),
    t('desk.incidents.file_surveillant', { name: surveillant }),
    t('desk.incidents.file_made', { time: new Date().toLocaleString(locale()) }),
    '',
    ...panel.incidents.map((incident) => `${timeLabel(incident.at)}  ${incident.name}: ${incident.note.replace(/\s+/g, ' ')}`),
    '',
  ];
  return lines.join('\r\n');
}

function downloadIncidents() {
  const url = URL.createObjectURL(new Blob([incidentsText()], { type: 'text/plain;charset=utf-8' }));
  const day = new Date().toISOString().slice(0, 10);
  const link = h('a', { href: url, download: `${t('desk.incidents.file_name')}-${day}.txt`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  panel.downloaded = true;
  setResult('incidents-result', () => t('desk.incidents.downloaded'));
}
