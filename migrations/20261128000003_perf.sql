-- Performance (issue 12).
--
-- updated_at tells merchants when their payment last changed. It was kept by a trigger that
-- turned the whole old and new row into JSON on every UPDATE; now the trigger compares only
-- the columns a merchant sees (what PaymentView shows), and a statement that sets updated_at
-- itself keeps its value (creation's fast path answers with the row it predicts, so it writes
-- the timestamp it shows).
CREATE FUNCTION pisgate_touch_payment() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER payments_touch_updated_at ON payments;
CREATE TRIGGER payments_touch_updated_at
    BEFORE UPDATE ON payments
    FOR EACH ROW
    WHEN ((OLD.status, OLD.bank_status, OLD.bank_payment_id, OLD.authorization_url,
           OLD.authorize_url, OLD.initiation, OLD.cancel_requested_at, OLD.expires_at,
           OLD.failure_code, OLD.failure_detail, OLD.recurring_remaining,
           OLD.recurring_executions, OLD.metadata, OLD.psu_id, OLD.return_url)
          IS DISTINCT FROM
          (NEW.status, NEW.bank_status, NEW.bank_payment_id, NEW.authorization_url,
           NEW.authorize_url, NEW.initiation, NEW.cancel_requested_at, NEW.expires_at,
           NEW.failure_code, NEW.failure_detail, NEW.recurring_remaining,
           NEW.recurring_executions, NEW.metadata, NEW.psu_id, NEW.return_url))
    EXECUTE FUNCTION pisgate_touch_payment();
