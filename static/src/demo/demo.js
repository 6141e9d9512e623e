// The demo product's own buttons open the chat through the widget's small API.
for (const id of ['ask-support']) {
  const button = document.getElementById(id);
  if (button) button.addEventListener('click', () => window.chatd && window.chatd.open());
}
